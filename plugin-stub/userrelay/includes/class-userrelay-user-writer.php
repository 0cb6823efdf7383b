<?php
/**
 * Applying a change to the user itself, through core's APIs where WordPress has one: creating
 * the user, its email and profile fields (UserRelay_Profile), a login rename, the password hash,
 * the roles, and deleting the user. Each refusal is a UserRelay_Apply_Exception; the caller
 * (UserRelay_Event_Changes) has already decided what applies and checked it.
 *
 * @package UserRelay
 */

if ( ! defined( 'ABSPATH' ) ) {
	exit;
}

/**
 * Writes a delivered user's row, roles and deletion.
 */
final class UserRelay_User_Writer {

	/**
	 * Checks run before writing.
	 *
	 * @var UserRelay_Delivery_Checks
	 */
	private $checks;

	/**
	 * Constructor.
	 *
	 * @param UserRelay_Delivery_Checks $checks Checks run before writing.
	 */
	public function __construct( UserRelay_Delivery_Checks $checks ) {
		$this->checks = $checks;
	}

	/**
	 * Creates the user with a random password (the real hash, if any, is written after).
	 *
	 * When the delivered hash follows, the random password's hash is thrown away in the same
	 * transaction: it is made at bcrypt's least cost (WordPress 6.8's wp_hash_password_options
	 * filter; older releases have no such filter and a cheap phpass hash), so a delivered create
	 * does not pay a full bcrypt hash (about 70-90 ms) for nothing. Without a delivered hash the
	 * random password's hash stays, at WordPress's own cost.
	 *
	 * @param array    $data         The event's user.
	 * @param string[] $actions      The event's actions.
	 * @param bool     $set_roles    Whether roles follow (then no default role is given).
	 * @param bool     $hash_follows Whether the delivered password hash is written after.
	 * @throws UserRelay_Apply_Exception When WordPress refuses.
	 */
	public function create( array $data, array $actions, bool $set_roles, bool $hash_follows = false ): WP_User {
		$userdata = array(
			'user_login' => $data['login'],
			'user_email' => $data['email'],
			'user_pass'  => wp_generate_password( 32, true, true ),
		);
		if ( array_intersect( array( 'create', 'edit' ), $actions ) ) {
			$userdata += self::profile_fields( $data );
			if ( isset( $data['registered'] ) && is_string( $data['registered'] ) && preg_match( '/^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$/', $data['registered'] ) ) {
				$userdata['user_registered'] = $data['registered'];
			}
		}
		if ( $set_roles ) {
			$userdata['role'] = '';
		}
		if ( $hash_follows ) {
			add_filter( 'wp_hash_password_options', array( self::class, 'least_cost' ), PHP_INT_MAX );
		}
		// Core's REST API slashes too: wp_insert_user() expects slashed input.
		$user_id = wp_insert_user( wp_slash( $userdata ) );
		remove_filter( 'wp_hash_password_options', array( self::class, 'least_cost' ), PHP_INT_MAX );
		if ( is_wp_error( $user_id ) ) {
			$taken = 'existing_user_login' === $user_id->get_error_code() ? get_user_by( 'login', $data['login'] ) : false;
			if ( $taken ) {
				throw new UserRelay_Apply_Exception( sprintf( "cannot create user '%s': that login belongs to user %d here, whose email is not %s", $data['login'], $taken->ID, $data['email'] ), 422 );
			}
			throw new UserRelay_Apply_Exception( sprintf( "cannot create user '%s': %s", $data['login'], $user_id->get_error_message() ), 422 );
		}
		return get_userdata( $user_id );
	}

	/**
	 * Bcrypt's least cost, for a hash that is overwritten before anyone can use it.
	 *
	 * @param array $options The hashing options WordPress would use.
	 */
	public static function least_cost( $options ): array {
		return array_merge( (array) $options, array( 'cost' => 4 ) );
	}

	/**
	 * Updates email and profile fields through wp_update_user().
	 *
	 * @param WP_User $user    The local user.
	 * @param array   $data    The event's user.
	 * @param bool    $email   Whether the email is written.
	 * @param bool    $profile Whether the other profile fields are (the login among them).
	 * @param array   $match   The event's match.
	 * @throws UserRelay_Apply_Exception When WordPress refuses.
	 */
	public function update_profile( WP_User $user, array $data, bool $email = true, bool $profile = true, array $match = array() ): void {
		// A rename reported by the source, of a login this user has here (users paired with
		// different logins keep theirs).
		$renamed_from = isset( $data['renamed_from'] ) && is_string( $data['renamed_from'] ) ? $data['renamed_from'] : '';
		if ( $profile && $data['login'] !== $user->user_login && '' !== $renamed_from && strtolower( $renamed_from ) === strtolower( $user->user_login ) ) {
			$user = $this->rename( $user, $data['login'], $match );
		}
		// A user without an email there never takes this user's email away.
		$email    = $email && '' !== $data['email'];
		$userdata = ( $email ? array( 'user_email' => $data['email'] ) : array() ) + ( $profile ? self::profile_fields( $data ) : array() );
		foreach ( $userdata as $field => $value ) {
			if ( (string) $user->get( $field ) === $value ) {
				unset( $userdata[ $field ] );
			}
		}
		if ( ! $userdata ) {
			return;
		}
		$userdata['ID'] = $user->ID;
		$result         = wp_update_user( wp_slash( $userdata ) );
		if ( is_wp_error( $result ) ) {
			throw new UserRelay_Apply_Exception( sprintf( "cannot update user '%s' (%d): %s", $user->user_login, $user->ID, $result->get_error_message() ), 422 );
		}
	}

	/**
	 * Writes a carried password hash (wp_insert_user() would hash it again; the relay carries
	 * the stored hash, never a password).
	 *
	 * @param int         $user_id Local user id.
	 * @param string|null $hash    The hash, or null.
	 */
	public function write_hash( int $user_id, ?string $hash ): void {
		global $wpdb;
		if ( null !== $hash && ! hash_equals( (string) get_userdata( $user_id )->user_pass, $hash ) ) {
			$wpdb->update( $wpdb->users, array( 'user_pass' => $hash, 'user_activation_key' => '' ), array( 'ID' => $user_id ) );
			clean_user_cache( $user_id );
		}
	}

	/**
	 * Gives the user exactly these roles.
	 *
	 * @param int           $user_id Local user id.
	 * @param string[]|null $roles   The roles, or null.
	 */
	public function write_roles( int $user_id, ?array $roles ): void {
		if ( null === $roles ) {
			return;
		}
		$user = get_userdata( $user_id );
		foreach ( array_diff( $user->roles, $roles ) as $role ) {
			$user->remove_role( $role );
		}
		foreach ( array_diff( $roles, $user->roles ) as $role ) {
			$user->add_role( $role );
		}
	}

	/**
	 * On a network, adds an existing network user to this blog with these roles (the default
	 * role when the delivery carries none), as add_user_to_blog() does.
	 *
	 * @param WP_User       $user  The network user (checked: not privileged anywhere).
	 * @param string[]|null $roles The delivery's checked roles, or null.
	 * @throws UserRelay_Apply_Exception When WordPress refuses.
	 */
	public function join_blog( WP_User $user, ?array $roles ): void {
		$roles  = null === $roles ? array( (string) get_option( 'default_role', 'subscriber' ) ) : $roles;
		$result = add_user_to_blog( get_current_blog_id(), $user->ID, $roles ? $roles[0] : '' );
		if ( is_wp_error( $result ) ) {
			throw new UserRelay_Apply_Exception( sprintf( "cannot add network user '%s' (%d) to this site: %s", $user->user_login, $user->ID, $result->get_error_message() ), 422 );
		}
		$this->write_roles( $user->ID, $roles );
	}

	/**
	 * Deletes the user, never losing content unless told to (USERRELAY_DELETE_REASSIGN). On a
	 * network that removes them from this blog only (wp_delete_user() there); a user left in
	 * no blog is deleted from the network only where USERRELAY_NETWORK_DELETE is true.
	 *
	 * @param WP_User $user  The local user (a member of this site: checked before).
	 * @param string  $login The event's login, for messages.
	 * @return int Its id.
	 * @throws UserRelay_Apply_Exception When the delete is refused.
	 */
	public function delete( WP_User $user, string $login ): int {
		$this->checks->not_privileged( $user, null, $login );
		$reassign = $this->checks->reassign_target( $user );
		require_once ABSPATH . 'wp-admin/includes/user.php';
		if ( ! wp_delete_user( $user->ID, $reassign ) ) {
			throw new UserRelay_Apply_Exception( sprintf( "WordPress did not delete user '%s' (%d)", $user->user_login, $user->ID ), 500 );
		}
		if ( is_multisite() && $this->checks->network_delete() && ! get_blogs_of_user( $user->ID ) ) {
			require_once ABSPATH . 'wp-admin/includes/ms.php';
			if ( ! wpmu_delete_user( $user->ID ) ) {
				throw new UserRelay_Apply_Exception( sprintf( "WordPress did not delete user '%s' (%d) from the network", $user->user_login, $user->ID ), 500 );
			}
		}
		return $user->ID;
	}

	/**
	 * Renames a user as WordPress core's own tools would (there is no API for it): user_login,
	 * and user_nicename when it was made from the old login, written with $wpdb, then the
	 * caches of the old and new login and nicename cleared. Refused (422, nothing of the event
	 * written) on a link matching users by login (the login is what pairs them), for a login
	 * WordPress would not accept, or one another user holds here.
	 *
	 * @param WP_User $user  The local user.
	 * @param string  $login The login the user has on the source.
	 * @param array   $match The event's match.
	 * @return WP_User The user as it is now.
	 * @throws UserRelay_Apply_Exception When the rename is refused.
	 */
	private function rename( WP_User $user, string $login, array $match ): WP_User {
		global $wpdb;
		$why = null;
		if ( isset( $match['by'] ) && 'login' === $match['by'] ) {
			$why = 'this link matches users by login, so a login is never changed by a delivery; rename the user here too, or match by email';
		} elseif ( sanitize_user( $login, true ) !== $login || ! validate_username( $login ) || mb_strlen( $login ) > 60 ) {
			$why = 'WordPress does not accept that login (at most 60 characters: letters, digits, space, _ . - @)';
		} elseif ( in_array( strtolower( $login ), array_map( 'strtolower', (array) apply_filters( 'illegal_user_logins', array() ) ), true ) ) {
			$why = 'that login is not allowed on this site (illegal_user_logins)';
		} else {
			$holder = get_user_by( 'login', $login );
			if ( $holder && (int) $holder->ID !== (int) $user->ID ) {
				$why = sprintf( 'that login belongs to user %d here', $holder->ID );
			}
		}
		if ( null !== $why ) {
			throw new UserRelay_Apply_Exception( sprintf( "login rename of user '%1\$s' (%2\$d) to '%3\$s' refused: %4\$s", $user->user_login, $user->ID, $login, $why ), 422 );
		}
		$row = array( 'user_login' => $login );
		if ( $user->user_nicename === sanitize_title( mb_substr( $user->user_login, 0, 50 ) ) ) {
			$row['user_nicename'] = self::free_nicename( $login, (int) $user->ID );
		}
		$wpdb->update( $wpdb->users, $row, array( 'ID' => $user->ID ) );
		clean_user_cache( $user ); // The old login, nicename and email keys go with the object.
		wp_cache_delete( $login, 'userlogins' );
		if ( isset( $row['user_nicename'] ) ) {
			wp_cache_delete( $row['user_nicename'], 'userslugs' );
		}
		return get_userdata( $user->ID );
	}

	/**
	 * A nicename made from a login, unique among users as wp_insert_user() makes it.
	 *
	 * @param string $login   The login.
	 * @param int    $user_id The user it is for.
	 */
	private static function free_nicename( string $login, int $user_id ): string {
		global $wpdb;
		$base     = mb_substr( sanitize_title( mb_substr( $login, 0, 50 ) ), 0, 50 );
		$nicename = $base;
		$suffix   = 2;
		while ( $wpdb->get_var( $wpdb->prepare( "SELECT ID FROM {$wpdb->users} WHERE user_nicename = %s AND ID != %d LIMIT 1", $nicename, $user_id ) ) ) {
			$nicename = mb_substr( $base, 0, 49 - strlen( (string) $suffix ) ) . '-' . $suffix;
			++$suffix;
		}
		return $nicename;
	}

	/**
	 * Profile fields present in the event, as wp_insert_user() fields.
	 *
	 * @param array $data The event's user.
	 * @return array<string, string>
	 */
	private static function profile_fields( array $data ): array {
		$fields = array();
		foreach ( UserRelay_Profile::edited() as $name ) {
			if ( isset( $data[ $name ] ) && is_string( $data[ $name ] ) ) {
				$fields[ UserRelay_Profile::user_field( $name ) ] = $data[ $name ];
			}
		}
		return $fields;
	}
}
