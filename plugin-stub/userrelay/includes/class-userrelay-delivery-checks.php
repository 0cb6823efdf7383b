<?php
/**
 * What a delivery must satisfy before the applier writes anything: its shape, roles that exist
 * here, meta keys that may be synced (UserRelay_Protected_Meta), a password hash this WordPress
 * verifies, no privileged role given and no privileged user touched (UserRelay_Privileges;
 * unless USERRELAY_SYNC_PRIVILEGED), on a network no user of another blog, and no content lost
 * by a delete (unless USERRELAY_DELETE_REASSIGN).
 *
 * Each refusal is a UserRelay_Apply_Exception carrying the per-event status and a message that
 * names the field, role or setting involved. Nothing here writes.
 *
 * @package UserRelay
 */

if ( ! defined( 'ABSPATH' ) ) {
	exit;
}

/**
 * Checks deliveries against this site.
 */
final class UserRelay_Delivery_Checks {

	/**
	 * Settings.
	 *
	 * @var UserRelay_Settings
	 */
	private $settings;

	/**
	 * Constructor.
	 *
	 * @param UserRelay_Settings $settings Settings.
	 */
	public function __construct( UserRelay_Settings $settings ) {
		$this->settings = $settings;
	}

	/**
	 * Password hash formats a login here verifies (UserRelay_Passwords: "$wp$" by WordPress 6.8+,
	 * by the plugin before).
	 *
	 * @return string[]
	 */
	public static function hash_formats(): array {
		return UserRelay_Passwords::formats();
	}

	/**
	 * The event's origin, once the fields every action needs are there.
	 *
	 * @param mixed $event One event.
	 * @return array{site: string, event_id: string}
	 * @throws UserRelay_Apply_Exception (400) Naming the first bad field.
	 */
	public function origin( $event ): array {
		if ( ! is_array( $event ) || ! isset( $event['id'] ) || ! is_scalar( $event['id'] ) || '' === (string) $event['id'] ) {
			throw new UserRelay_Apply_Exception( 'id: expected the delivery id', 400 );
		}
		$origin = isset( $event['origin'] ) && is_array( $event['origin'] ) ? $event['origin'] : array();
		if ( ! isset( $origin['site'], $origin['event_id'] ) || ! is_string( $origin['site'] ) || ! is_string( $origin['event_id'] ) || '' === $origin['site'] || '' === $origin['event_id'] ) {
			throw new UserRelay_Apply_Exception( 'origin: expected {"site": ..., "event_id": ...}', 400 );
		}
		$actions = isset( $event['actions'] ) && is_array( $event['actions'] ) ? $event['actions'] : array();
		if ( ! $actions || array_diff( $actions, UserRelay_Facts::ACTIONS ) ) {
			throw new UserRelay_Apply_Exception( 'actions: expected a non-empty list drawn from ' . implode( ', ', UserRelay_Facts::ACTIONS ), 400 );
		}
		$user = isset( $event['user'] ) && is_array( $event['user'] ) ? $event['user'] : array();
		if ( ! isset( $user['login'] ) || ! is_string( $user['login'] ) || '' === $user['login'] ) {
			throw new UserRelay_Apply_Exception( 'user.login: expected a non-empty string', 400 );
		}
		if ( ! isset( $user['email'] ) || ! is_string( $user['email'] ) ) {
			throw new UserRelay_Apply_Exception( 'user.email: expected a string ("" for a user without an email, matched by login)', 400 );
		}
		return array(
			'site'     => $origin['site'],
			'event_id' => $origin['event_id'],
		);
	}

	/**
	 * The event's roles, each existing here (never invented).
	 *
	 * @param array $data The event's user.
	 * @return string[]
	 * @throws UserRelay_Apply_Exception Naming a role this site does not have.
	 */
	public function roles( array $data ): array {
		if ( ! isset( $data['roles'] ) || ! is_array( $data['roles'] ) ) {
			throw new UserRelay_Apply_Exception( 'user.roles: expected a list of role names (actions include roles)', 400 );
		}
		$roles = array_values( array_unique( array_map( 'strval', $data['roles'] ) ) );
		foreach ( $roles as $role ) {
			if ( ! wp_roles()->is_role( $role ) ) {
				throw new UserRelay_Apply_Exception( sprintf( "role '%s' does not exist on this site", $role ), 422 );
			}
		}
		return $roles;
	}

	/**
	 * The event's password hash, in a format this WordPress verifies.
	 *
	 * @param array $data The event's user.
	 * @throws UserRelay_Apply_Exception When it is absent or unverifiable here.
	 */
	public function hash( array $data ): string {
		$hash = isset( $data['password_hash'] ) && is_string( $data['password_hash'] ) ? $data['password_hash'] : '';
		// phpass; bcrypt; bcrypt over 6.8's HMAC-SHA384 ("$wp$", UserRelay_Passwords).
		if ( preg_match( '/^\$P\$[.\/0-9A-Za-z]{31}$/', $hash ) || preg_match( '/^(\$wp)?\$2[aby]\$\d\d\$[.\/0-9A-Za-z]{53}$/', $hash ) ) {
			return $hash;
		}
		$shown = '' === $hash ? 'none' : '"' . substr( $hash, 0, 4 ) . '…"';
		throw new UserRelay_Apply_Exception( sprintf( 'the password hash (%s) is not a format WordPress %s verifies (%s)', $shown, get_bloginfo( 'version' ), implode( ', ', self::hash_formats() ) ), 422 );
	}

	/**
	 * Refuses the whole event when its meta or meta_deleted names a key that may not be synced:
	 * nothing of it is written.
	 *
	 * @param array $data The event's user.
	 * @throws UserRelay_Apply_Exception (422 naming the key, 400 for a malformed list).
	 */
	public function meta( array $data ): void {
		if ( isset( $data['meta'] ) && ! is_array( $data['meta'] ) ) {
			throw new UserRelay_Apply_Exception( 'user.meta: expected an object of meta key to value', 400 );
		}
		if ( isset( $data['meta_deleted'] ) && ! is_array( $data['meta_deleted'] ) ) {
			throw new UserRelay_Apply_Exception( 'user.meta_deleted: expected a list of meta keys', 400 );
		}
		$keys = array_map( 'strval', array_keys( isset( $data['meta'] ) ? $data['meta'] : array() ) );
		foreach ( isset( $data['meta_deleted'] ) ? $data['meta_deleted'] : array() as $key ) {
			if ( ! is_string( $key ) ) {
				throw new UserRelay_Apply_Exception( 'user.meta_deleted: expected a list of meta keys (strings)', 400 );
			}
			$keys[] = $key;
		}
		foreach ( isset( $data['meta'] ) ? $data['meta'] : array() as $key => $value ) {
			if ( null === UserRelay_Meta_Values::decode( $value ) ) {
				throw new UserRelay_Apply_Exception( sprintf( 'user.meta.%s: several values travel as {"%s": [a non-empty list]} and nothing else', $key, UserRelay_Meta_Values::SEVERAL ), 400 );
			}
		}
		foreach ( $keys as $key ) {
			$problem = $this->settings->meta_problem( $key );
			if ( null !== $problem ) {
				throw new UserRelay_Apply_Exception( $problem . '; the event was not applied', 422 );
			}
		}
	}

	/**
	 * Refuses when the local user is privileged or the event would give a privileged role,
	 * unless the site opted in (USERRELAY_SYNC_PRIVILEGED or USERRELAY_SYNC_ADMINS).
	 *
	 * @param WP_User|null  $user  The matched local user.
	 * @param string[]|null $roles The event's checked roles, when it sets roles.
	 * @param string        $login The login, for the message.
	 * @throws UserRelay_Apply_Exception (422) When a privilege is involved.
	 */
	public function not_privileged( ?WP_User $user, ?array $roles, string $login ): void {
		if ( $user && UserRelay_Privileges::is_super_admin( $user ) ) {
			throw new UserRelay_Apply_Exception( sprintf( "user '%s' is a super admin of this network: super admins are never changed by deliveries", $login ), 422 );
		}
		if ( $this->settings->sync_privileged() ) {
			return;
		}
		$why = $user ? UserRelay_Privileges::user_problem( $user ) : null;
		if ( null !== $why ) {
			throw new UserRelay_Apply_Exception( sprintf( "user '%s' %s here: privileged users are not changed by deliveries unless USERRELAY_SYNC_PRIVILEGED is true on this site", $login, $why ), 422 );
		}
		foreach ( null === $roles ? array() : $roles as $role ) {
			$grants = UserRelay_Privileges::role_grants( $role );
			if ( $grants ) {
				throw new UserRelay_Apply_Exception( sprintf( "role '%s' grants %s here: a delivery may not give a privileged role unless USERRELAY_SYNC_PRIVILEGED is true on this site", $role, implode( ', ', array_slice( $grants, 0, 3 ) ) . ( count( $grants ) > 3 ? ', ...' : '' ) ), 422 );
			}
		}
	}

	/**
	 * Whether a delete that leaves a user in no blog deletes them from the network too
	 * (USERRELAY_NETWORK_DELETE).
	 */
	public function network_delete(): bool {
		return $this->settings->network_delete();
	}

	/**
	 * Whether a matched user belongs to this blog (always, on a single site).
	 *
	 * @param WP_User $user The matched local user.
	 */
	public function is_member( WP_User $user ): bool {
		return $this->settings->is_member( (int) $user->ID );
	}

	/**
	 * On a network, whether a delivery adds a matched network user to this blog: a create (or
	 * an event allowed to create, create_missing) of a user who is not a member of it yet.
	 *
	 * @param WP_User $user  The matched local user.
	 * @param array   $event The checked event.
	 */
	public function joins( WP_User $user, array $event ): bool {
		if ( ! is_multisite() || $this->is_member( $user ) || in_array( 'delete', $event['actions'], true ) ) {
			return false;
		}
		return in_array( 'create', $event['actions'], true ) || ! empty( $event['create_missing'] );
	}

	/**
	 * On a network, refuses a matched user who is not a member of the blog this plugin serves.
	 *
	 * @param WP_User $user  The matched local user.
	 * @param string  $login The login, for the message.
	 * @throws UserRelay_Apply_Exception (422) For a user of another blog.
	 */
	public function member( WP_User $user, string $login ): void {
		if ( ! $this->settings->is_member( (int) $user->ID ) ) {
			throw new UserRelay_Apply_Exception( sprintf( "user '%s' exists on this network but is not a member of this site; the plugin changes only this site's users (a create adds them to it)", $login ), 422 );
		}
	}

	/**
	 * Who gets a deleted user's posts and links: a user id, or null to delete them with the user.
	 * By default (USERRELAY_DELETE_REASSIGN not defined) a user who owns any is not deleted.
	 *
	 * @param WP_User $user The user to delete.
	 * @throws UserRelay_Apply_Exception (422) When the delete would lose content or the setting is wrong.
	 */
	public function reassign_target( WP_User $user ): ?int {
		$reassign = $this->settings->delete_reassign();
		if ( 'delete' === $reassign ) {
			return null;
		}
		if ( is_int( $reassign ) ) {
			if ( $reassign === $user->ID || ! get_userdata( $reassign ) ) {
				throw new UserRelay_Apply_Exception( sprintf( 'USERRELAY_DELETE_REASSIGN is %d, which is not another existing user here', $reassign ), 422 );
			}
			return $reassign;
		}
		$owned = $this->owned_content( $user->ID );
		if ( $owned ) {
			throw new UserRelay_Apply_Exception( sprintf( "user '%s' (%d) owns %d post(s) or link(s) here, so it was not deleted: define USERRELAY_DELETE_REASSIGN as a user id to give them to, or as 'delete' to delete them with the user", $user->user_login, $user->ID, $owned ), 422 );
		}
		return null;
	}

	/**
	 * How many posts and links wp_delete_user() without reassignment would delete with the user
	 * (the same post types it picks).
	 *
	 * @param int $user_id Local user id.
	 */
	private function owned_content( int $user_id ): int {
		global $wpdb;
		$types = array();
		foreach ( get_post_types( array(), 'objects' ) as $type ) {
			if ( $type->delete_with_user || ( null === $type->delete_with_user && post_type_supports( $type->name, 'author' ) ) ) {
				$types[] = $type->name;
			}
		}
		/** This filter is documented in wp-admin/includes/user.php */
		$types = (array) apply_filters( 'post_types_to_delete_with_user', $types, $user_id );
		$posts = 0;
		if ( $types ) {
			$in    = implode( ',', array_fill( 0, count( $types ), '%s' ) );
			$posts = (int) $wpdb->get_var( $wpdb->prepare( "SELECT COUNT(*) FROM {$wpdb->posts} WHERE post_author = %d AND post_type IN ($in)", array_merge( array( $user_id ), $types ) ) );
		}
		return $posts + (int) $wpdb->get_var( $wpdb->prepare( "SELECT COUNT(*) FROM {$wpdb->links} WHERE link_owner = %d", $user_id ) );
	}
}
