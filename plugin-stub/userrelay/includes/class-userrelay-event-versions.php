<?php
/**
 * The versions of an outgoing event (docs/adr/0011-convergent-versions.md): which field groups
 * a reported change stamps, which versions the event carries, and the floor a re-created
 * person's first stamp must pass.
 *
 * Works on the snapshot's notes and protocol user object (UserRelay_Snapshot); reads tombstones
 * through UserRelay_Stored_Versions and never writes anything.
 *
 * @package UserRelay
 */

if ( ! defined( 'ABSPATH' ) ) {
	exit;
}

/**
 * What an outgoing event stamps and carries.
 */
final class UserRelay_Event_Versions {

	/**
	 * The field groups a request changed (UserRelay_Versions), from the hooks' notes.
	 *
	 * @param array    $notes   What the hooks saw.
	 * @param string[] $actions The event's actions.
	 * @param array    $fields  The event's user.
	 * @return string[]
	 */
	public static function changed_groups( array $notes, array $actions, array $fields ): array {
		$groups = array();
		if ( $notes['create'] ) {
			$groups = UserRelay_Facts::VERSION_GROUPS;
		} elseif ( $notes['edit'] ) {
			if ( $notes['email'] ) {
				$groups[] = 'email';
			}
			if ( $notes['profile'] || ! $notes['email'] ) {
				$groups[] = 'profile';
			}
		}
		if ( in_array( 'password', $actions, true ) ) {
			$groups[] = 'password';
		}
		if ( in_array( 'roles', $actions, true ) ) {
			$groups[] = 'roles';
		}
		foreach ( self::meta_keys( $fields ) as $key ) {
			$groups[] = 'meta:' . $key;
		}
		return array_values( array_unique( $groups ) );
	}

	/**
	 * The versions an event carries: created (which incarnation of the person) and those of
	 * the groups its actions carry.
	 *
	 * @param array    $versions The user's versions.
	 * @param string[] $actions  The event's actions.
	 * @param array    $fields   The event's user.
	 * @return array<string, string>
	 */
	public static function carried( array $versions, array $actions, array $fields ): array {
		$groups = array( 'created' );
		if ( array_intersect( array( 'create', 'edit' ), $actions ) ) {
			$groups[] = 'profile';
			$groups[] = 'email';
		}
		foreach ( array( 'password', 'roles' ) as $group ) {
			if ( in_array( $group, $actions, true ) ) {
				$groups[] = $group;
			}
		}
		if ( in_array( 'metadata', $actions, true ) ) {
			foreach ( self::meta_keys( $fields ) as $key ) {
				$groups[] = 'meta:' . $key;
			}
		}
		$carried = array();
		foreach ( $groups as $group ) {
			$carried[ $group ] = UserRelay_Versions::held( $versions, $group, array() );
		}
		return $carried;
	}

	/**
	 * When a person with this user's email or login was last deleted here (a re-created user
	 * must be newer than that), or the oldest version.
	 *
	 * @param WP_User $user The user.
	 */
	public static function buried( WP_User $user ): string {
		UserRelay_Stored_Versions::prime_gone( (string) $user->user_email, (string) $user->user_login );
		$email = UserRelay_Stored_Versions::gone( 'email', (string) $user->user_email );
		$login = UserRelay_Stored_Versions::gone( 'login', (string) $user->user_login );
		return UserRelay_Versions::newer( $email ?? UserRelay_Facts::MIN_VERSION, $login ?? UserRelay_Facts::MIN_VERSION );
	}

	/**
	 * The meta keys an event's user carries, written or removed.
	 *
	 * @param array $fields The event's user.
	 * @return string[]
	 */
	private static function meta_keys( array $fields ): array {
		$keys = isset( $fields['meta'] ) ? array_map( 'strval', array_keys( (array) $fields['meta'] ) ) : array();
		return array_merge( $keys, isset( $fields['meta_deleted'] ) ? array_map( 'strval', (array) $fields['meta_deleted'] ) : array() );
	}
}
