<?php
/**
 * Applying a metadata change: writes the delivered meta keys and deletes the meta_deleted ones,
 * every key checked again against the protected meta rule and the site's deny list
 * (UserRelay_Settings::is_meta_denied) right before it is written, so no path writes a key that
 * may not be synced. Keys and values are slashed: the meta API unslashes both.
 *
 * @package UserRelay
 */

if ( ! defined( 'ABSPATH' ) ) {
	exit;
}

/**
 * Writes a delivered user's meta.
 */
final class UserRelay_Meta_Writer {

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
	 * Writes meta and deletes meta_deleted keys, all of them syncable (checked before anything
	 * was written; checked again here, so no path can write a protected key). Keys and values
	 * are slashed: the meta API unslashes both, and backslashes would be lost.
	 *
	 * @param int           $user_id Local user id.
	 * @param array         $data    The event's user.
	 * @param string[]|null $only    The keys to write or remove (null: every key carried).
	 * @throws UserRelay_Apply_Exception (422) Naming a key that may not be synced here.
	 */
	public function apply( int $user_id, array $data, ?array $only = null ): void {
		$meta = isset( $data['meta'] ) && is_array( $data['meta'] ) ? $data['meta'] : array();
		foreach ( $meta as $key => $value ) {
			if ( $this->settings->is_meta_denied( (string) $key ) ) {
				throw new UserRelay_Apply_Exception( (string) $this->settings->meta_problem( (string) $key ), 422 );
			}
			if ( null === $only || in_array( (string) $key, $only, true ) ) {
				self::write_meta( $user_id, (string) $key, (array) UserRelay_Meta_Values::decode( $value ) );
			}
		}
		$deleted = isset( $data['meta_deleted'] ) && is_array( $data['meta_deleted'] ) ? $data['meta_deleted'] : array();
		foreach ( $deleted as $key ) {
			if ( ! is_string( $key ) || $this->settings->is_meta_denied( $key ) ) {
				throw new UserRelay_Apply_Exception( 'meta_deleted: ' . ( is_string( $key ) ? (string) $this->settings->meta_problem( $key ) : 'expected meta keys' ), 422 );
			}
			if ( null === $only || in_array( $key, $only, true ) ) {
				delete_user_meta( $user_id, wp_slash( $key ) );
			}
		}
	}

	/**
	 * Gives a meta key exactly these values, in order (one value: update_user_meta(), as
	 * before; several: the key's rows replaced, unless they hold these values already).
	 *
	 * @param int    $user_id Local user id.
	 * @param string $key     Meta key (syncable: checked before).
	 * @param array  $values  Its values.
	 */
	private static function write_meta( int $user_id, string $key, array $values ): void {
		$held = get_user_meta( $user_id, $key, false );
		if ( 1 === count( $values ) && count( $held ) < 2 ) {
			update_user_meta( $user_id, wp_slash( $key ), wp_slash( $values[0] ) );
			return;
		}
		if ( array_values( $held ) === array_values( $values ) ) {
			return;
		}
		delete_user_meta( $user_id, wp_slash( $key ) );
		foreach ( $values as $value ) {
			add_user_meta( $user_id, wp_slash( $key ), wp_slash( $value ) );
		}
	}
}
